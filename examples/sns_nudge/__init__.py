"""Example: topology 2 with AWS's AmazonIpSpaceChanged notices nudging the refresher (asgi.py)."""
