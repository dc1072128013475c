"""The lab: mock blocking servers that reproduce censorship techniques on one machine."""
