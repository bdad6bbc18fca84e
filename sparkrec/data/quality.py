"""Reasons a raw row is quarantined; shared by the prepare job and the synthetic dirt injector."""

NULL_USER = "null_user"            # user ID null, empty or blank
NULL_ITEM = "null_item"            # item ID null, empty or blank
BAD_RATING = "bad_rating"          # rating not parsable as a number
RATING_OUT_OF_RANGE = "rating_out_of_range"
BAD_TIMESTAMP = "bad_timestamp"    # timestamp null or not parsable
BAD_SPLIT = "bad_split"            # a given split that is not train, validation or test

REASONS = (NULL_USER, NULL_ITEM, BAD_RATING, RATING_OUT_OF_RANGE, BAD_TIMESTAMP, BAD_SPLIT)
