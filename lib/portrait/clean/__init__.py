"""clean"""
