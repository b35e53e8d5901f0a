"""poolwatch's core: pool state, the tracker interface, the metric catalog, settings, naming,
leaks and lifecycle. It imports no pool library and no metrics backend (an import-linter
contract in CI keeps it so)."""
