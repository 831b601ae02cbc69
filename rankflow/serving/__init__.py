"""The online path: the scoring service (FastAPI + the Feast SDK in process), its served-feature
log, and the traffic that exercises it (log replay and the closed loop)."""
