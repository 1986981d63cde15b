"""Small helpers shared by every layer: safe names, file-system utilities, did-you-mean hints."""
