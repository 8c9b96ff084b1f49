"""govedge.tools: the govedge command (cli), the field tools (field/) and the developer tools (dev/)."""
