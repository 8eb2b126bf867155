"""bastion.venues"""
