"""Loading plugins (entry points, allow-list) and the registries of what they register."""
