"""Station releases and their staged rollout (issue 14 §5; docs/station.md "Updates")."""
