"""bastion.ops"""
