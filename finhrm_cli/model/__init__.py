"""The HRM in MLX (``hrm``): nothing here reads files, trains or prints."""
