"""The one check of an e-mail address, wherever one enters: config, static file, Fleio, the store.

An address that passes is one plain mailbox SMTP can carry as it is: no display name, no list,
no control or invisible character (U+00AD, U+200B, U+202E, NUL ...), an ASCII local part, and a
domain with a dot (an internationalised one is turned into its ASCII form). The only module that
imports email_validator; it never asks DNS (check_deliverability=False): a scan must not wait on
lookups, and the relay is the judge of what it delivers.
"""

from __future__ import annotations

import functools

import email_validator

from goalkeeper.model import Owner


@functools.lru_cache(maxsize=65536)
def checked_mail_address(text: str) -> str:
    """The address as it is sent to (domain lowercased, IDN as ASCII), or ValueError saying why
    not. The reason shows the text with repr(), so an invisible character can be seen."""
    try:
        valid = email_validator.validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,  # a relay without SMTPUTF8 would refuse it at send time
            allow_display_name=False,
            allow_empty_local=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except email_validator.EmailNotValidError as err:
        raise ValueError(f"not a usable e-mail address: {text!r} ({err})") from None
    return str(valid.ascii_email or valid.normalized)


def mail_address_problem(text: str) -> str | None:
    """Why `text` cannot be mailed to, or None when it can."""
    try:
        checked_mail_address(text)
    except ValueError as err:
        return str(err)
    return None


def customer_owner(name: str | None, email: str | None, client_id: str | None = None) -> Owner:
    """An Owner from billing or inventory data. An address that cannot be used leaves the owner
    NOT FOUND with the reason, so ops get the report and know why; it never stops the tick."""
    if email is None or not email.strip():
        return Owner(name=name, email=None, client_id=client_id)
    try:
        address = checked_mail_address(email.strip())
    except ValueError as err:
        return Owner(name=name, email=None, client_id=client_id, address_problem=str(err))
    return Owner(name=name, email=address, client_id=client_id)
