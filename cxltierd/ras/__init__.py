"""RAS: CXL memory errors and device health. Pure parts only: the tracefs line parser (events), the `ras:` policy
section (policy), the per-memdev health state machine (health), its JSON form (store), nodes' health (nodes), and the drain planner
(drain). Nothing here reads files or the clock: the daemon feeds lines, time and node sizes in."""
