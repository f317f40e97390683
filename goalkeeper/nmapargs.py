"""What scan.nmap_arguments may hold: an allowlist of nmap's pacing and patience options.

nmap has hundreds of options, and any one of -iL, --iR, a bare address or --script sends packets
elsewhere, so everything not listed is refused by name. Pure: no I/O.
"""

from __future__ import annotations

import re
import shlex

# nmap_arguments may hold only these: pacing and patience, nothing that names a target, a port,
# a scan type, a file or a script. Everything else is refused by name (an allowlist: nmap has
# hundreds of options, and any one of -iL, --iR, a bare address or --script sends packets
# elsewhere). The scanner adds -Pn and -n itself whatever is written here.
_NMAP_FLAGS = frozenset(
    {"-Pn", "-n", "--privileged", "--defeat-rst-ratelimit", "--defeat-icmp-ratelimit"}
    | {f"-T{level}" for level in range(6)}
)
_NMAP_COUNT = re.compile(r"[0-9]{1,3}")
_NMAP_TIME = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?(ms|s|m|h)?")  # nmap's <time>: 500ms, 1.5s, 10m
_NMAP_VALUED = {
    "--max-retries": _NMAP_COUNT,
    "--host-timeout": _NMAP_TIME,
    "--max-rtt-timeout": _NMAP_TIME,
    "--min-rtt-timeout": _NMAP_TIME,
    "--initial-rtt-timeout": _NMAP_TIME,
    "--scan-delay": _NMAP_TIME,
    "--max-scan-delay": _NMAP_TIME,
}
_NMAP_SET_ELSEWHERE = {
    "--max-rate": "scan.max_rate and scan.max_rate_per_subnet",
    "--min-rate": "scan.max_rate and scan.max_rate_per_subnet",
    "--min-hostgroup": "scan.batch_size",
    "--max-hostgroup": "scan.batch_size",
    "-S": "scan.source_addresses",
}


def nmap_arguments_problems(value: str) -> list[str]:
    """Why `value` may not be scan.nmap_arguments, naming each offending token; [] if fine."""
    try:
        tokens = shlex.split(value)
    except ValueError as err:
        return [f"cannot be split into words ({err}): close the quote"]
    problems: list[str] = []
    unknown: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        name, equals, inline = token.partition("=")
        if token in _NMAP_FLAGS:
            continue
        if name in _NMAP_VALUED:
            if not equals:
                inline = tokens[index] if index < len(tokens) else ""
                index += 1
            if not _NMAP_VALUED[name].fullmatch(inline):
                kind = "a count" if _NMAP_VALUED[name] is _NMAP_COUNT else "a time (500ms, 2s, 10m)"
                problems.append(f"{name} needs {kind}, not {inline!r}")
        elif name in _NMAP_SET_ELSEWHERE:
            problems.append(
                f"{name} may not be set here: it comes from {_NMAP_SET_ELSEWHERE[name]}"
            )
        else:
            unknown.append(repr(token))
    if unknown:
        allowed = [*sorted(_NMAP_FLAGS), *(f"{option} VALUE" for option in _NMAP_VALUED)]
        problems.append(
            f"not allowed: {', '.join(unknown)} (targets come only from the inventory, the scan "
            f"type and ports from scan.privileged and scan.ports; allowed: {' '.join(allowed)})"
        )
    return problems
