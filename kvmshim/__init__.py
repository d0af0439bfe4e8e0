"""kvmshim package."""
