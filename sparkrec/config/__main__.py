"""`python -m sparkrec.config`: print the documented reference of every config key."""
from sparkrec.config import config_reference

print(config_reference(), end="")
