"""Scanning: which ports are dangerous, how addresses are batched, and running nmap.

`catalog` (the dangerous-port list and advice), `planner` (pure batching) and `nmap` (the only
module that runs or imports nmap). Nothing here knows about owners, findings or notifications,
and this package never imports the inventory, notify or state packages.
"""
