"""bastion.strategies"""
