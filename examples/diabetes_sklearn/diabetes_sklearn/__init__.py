"""A scikit-learn gradient-boosting regressor for disease progression, retrained by ctloop."""
