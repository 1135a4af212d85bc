"""`inspect-bench`: the reference studies' protocol (categories x detectors x settings x seeds) and its report."""
