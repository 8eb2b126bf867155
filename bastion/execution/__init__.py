"""bastion.execution"""
