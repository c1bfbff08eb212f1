"""Bootstrap without seeds: the BeaconServer, the subnet-sweep Locator and SeekChat."""
