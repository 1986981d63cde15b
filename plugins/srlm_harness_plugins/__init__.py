"""The built-in plugins of srlm-harness. Each is registered through the same entry-point group
(``srlm_harness``) a third-party plugin uses, and uses only the public plugin API."""
