"""bastion.research"""
