"""Labels: answers matched to a fixed label set, with probabilities, votes and their columns."""
