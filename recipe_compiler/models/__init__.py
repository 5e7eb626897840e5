"""What a checkpoint holds, from its headers alone: `index` (config.json and safetensors
headers, validated, into `ModelInfo`) and `arch` (each supported architecture as data)."""
