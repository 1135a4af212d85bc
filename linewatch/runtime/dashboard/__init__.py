"""`inspect-dashboard`: a read-only live web page of the line, fed by the runtimes' ZeroMQ streams."""
