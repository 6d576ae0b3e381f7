"""KFP component: see README.md."""
