"""Rating prediction on MovieLens: data, instructions, classic baselines, reading a rating out of a LM, sweeps."""
