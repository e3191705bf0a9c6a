"""``wan-animate`` command line: one module per subcommand, all over the same engine entries."""
