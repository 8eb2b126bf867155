"""bastion.store"""
