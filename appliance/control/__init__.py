"""Control loops beside the frame flow: adaptive detection stride, power and thermal."""
