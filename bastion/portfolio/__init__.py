"""bastion.portfolio"""
