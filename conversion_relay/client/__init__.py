"""The producer side a web app imports: validate, hash and store events; explain what they would become."""
