"""bastion.venues.sim"""
