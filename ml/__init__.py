"""scikit-learn models over warehouse features: repurchase prediction and product recommendation."""
