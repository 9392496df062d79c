"""Command-line entry points; each ``main(argv)`` is a thin wrapper over the library."""
