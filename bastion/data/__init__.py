"""bastion.data"""
