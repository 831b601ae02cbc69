"""Raw data: the simulator that writes the raw-data contract with a known truth, and the
contract check every build runs first (docs/data-contract.md)."""
