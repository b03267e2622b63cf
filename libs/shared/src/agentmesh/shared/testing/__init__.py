"""Test helpers shared by every service: servers, fixtures, signing keys."""
