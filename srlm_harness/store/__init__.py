"""The artifact store: content-addressed stage and evaluation outputs, run manifests, locks,
and the file-system utilities that keep them whole."""
