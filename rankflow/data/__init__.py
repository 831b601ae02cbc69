"""Raw data: the contract check every build runs first (docs/data-contract.md) and the one
listing of the raw files. The simulator that writes this contract lives in rankflow.sim."""
