"""RAS: CXL memory errors and device health. Pure parts only: the tracefs line parser (events), the per-memdev
health state machine (health), the drain planner (drain) and the `ras:` policy section (policy)."""
