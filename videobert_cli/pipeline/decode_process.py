"""Imported first by the decode fork server: marks its process as a decode process.

A decode process decodes and crops with numpy and never starts CUDA, so decord comes without
torch there (``decoders/decord.py`` imports torch first everywhere else).
"""
