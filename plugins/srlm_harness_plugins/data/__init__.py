"""Dataset sources: GSM8K, reasoning-gym generators and local files."""
