"""The DR drill (``make drill``): failover and switchover on the lab under a steady load, measured (issue 10)."""
