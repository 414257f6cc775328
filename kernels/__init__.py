"""medvol subpackage."""
