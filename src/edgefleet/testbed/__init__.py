"""A fleet on one machine: network namespaces per site, joined by an emulated WAN."""
