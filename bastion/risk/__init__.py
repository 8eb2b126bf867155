"""bastion.risk"""
