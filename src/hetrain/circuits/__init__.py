"""Encrypted linear algebra and approximations, written against the ckks.Engine interface only
(no HE library is imported here): packings, matrix products, rotate-and-sum, polynomials."""
