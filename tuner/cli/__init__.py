"""The `tune` command line."""
