"""Where the targets come from: a static file, or OpenStack joined with Fleio billing."""
