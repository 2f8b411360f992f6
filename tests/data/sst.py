"""A few SST-2 style rows for the tests: sentences, and phrases of their parse trees."""

# Each sentence is followed by phrases of its parse tree, each a row of its own, as in SST-2.
SST_ROWS = [
    ("1", "a gorgeous , witty , seductive movie"),
    ("1", "gorgeous , witty , seductive movie"),
    ("1", "witty"),
    ("0", "the plot is nothing but boilerplate clichés from start to finish"),
    ("0", "nothing but boilerplate clichés"),
    ("0", "boilerplate clichés"),
    ("1", "an utterly charming and hilarious film that reminded me of the best of disney"),
    ("1", "utterly charming and hilarious"),
    ("0", "it 's a cookie-cutter movie , a cut-and-paste job"),
    ("0", "a cut-and-paste job"),
    ("1", "one of the year 's best films"),
    ("0", "a dull , simple-minded and stereotypical tale of drugs , death and mind-numbing"),
    ("0", "dull"),
    ("1", "the performances are uniformly excellent"),
    ("1", "uniformly excellent"),
    ("0", "this is a movie that is tired , unfunny and badly acted"),
]
