"""bastion.engine"""
