"""What cxltierd shows people: text and JSON renderings (topology, status, simulations) and the doctor's checks."""
