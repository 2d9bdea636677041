"""Sentence grammars for the synthetic corpora.

The grammars are small, hand-written and ship with the project, so the corpus needs no download.
The English one has several hundred words in a few phrase patterns: enough vocabulary for word
error rates to mean something and enough structure for an n-gram language model to help. The
other languages use the same phrase patterns over smaller lexicons; they only need real phonetics.

Example
-------
>>> import random
>>> grammar = SentenceGrammar.for_language("en")
>>> sentence = grammar.sentence(random.Random(0))
>>> sentence == sentence.upper() and 4 <= len(sentence.split()) <= 20
True
>>> sorted(SentenceGrammar.languages())[:3]
['de', 'en', 'es']
"""


# English: word classes of a toy narrative world (farm, town, sea, workshop).
_EN = {
    "det": "THE THE THE A THIS THAT EVERY ONE HIS HER THEIR OUR".split(),
    "num": "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN TWELVE TWENTY MANY SEVERAL FEW".split(),
    "adj": """OLD YOUNG SMALL LARGE HEAVY LIGHT DARK BRIGHT QUIET LOUD COLD WARM GREEN RED BLUE
        BROWN WHITE BLACK GOLDEN SILVER WOODEN EMPTY FULL TIRED HAPPY ANGRY CAREFUL CLEVER GENTLE
        PROUD STRANGE NARROW BROAD DEEP SHALLOW ROUND SHARP SOFT ROUGH SMOOTH FRESH SWEET BITTER
        HONEST BRAVE LONELY CURIOUS ANCIENT SILENT RUSTY DUSTY MUDDY HIDDEN FAMOUS LAZY BUSY
        PATIENT POLITE SLEEPY HUNGRY THIRSTY WILD NOBLE HUMBLE""".split(),
    "noun": """FARMER BAKER SAILOR MILLER WEAVER SMITH HUNTER SHEPHERD MERCHANT SOLDIER PRIEST
        KING QUEEN PRINCE WIDOW STRANGER CHILD DOCTOR TEACHER NEIGHBOUR CAPTAIN FISHERMAN
        CARPENTER GARDENER TRAVELLER HORSE DOG CAT GOOSE FOX WOLF BEAR RAVEN OWL SHEEP COW PIG
        MOUSE RABBIT DONKEY""".split(),
    "thing": """BASKET LANTERN LETTER BLANKET HAMMER KETTLE BARREL WAGON BOAT ROPE CANDLE BOTTLE
        SADDLE BUCKET LADDER KNIFE SHOVEL BASIN BLADE BRIDLE CLOAK COAT HAT BOOT RING COIN KEY
        BOOK MAP NET SAIL OAR SPOON PLATE BOWL CUP LOAF CHEESE APPLE PEAR ONION CABBAGE TURNIP
        FEATHER STONE BRANCH FLOWER CHAIR TABLE CHEST DRUM FIDDLE FLUTE""".split(),
    "things": """BASKETS LANTERNS LETTERS BLANKETS HAMMERS KETTLES BARRELS WAGONS BOATS ROPES
        CANDLES BOTTLES BUCKETS LADDERS KNIVES SHOVELS CLOAKS COATS HATS BOOTS RINGS COINS KEYS
        BOOKS MAPS NETS SPOONS PLATES BOWLS CUPS LOAVES APPLES PEARS ONIONS CABBAGES FEATHERS
        STONES BRANCHES FLOWERS CHAIRS TABLES CHESTS""".split(),
    "place": """MARKET MILL HARBOUR BRIDGE CHURCH CASTLE TAVERN FOREST MEADOW RIVER VALLEY HILL
        GARDEN KITCHEN CELLAR STABLE BARN ORCHARD VILLAGE CITY SHORE ISLAND TOWER GATE SQUARE
        WELL FIELD ROAD LANE WORKSHOP LIBRARY SCHOOL""".split(),
    "verb_t": """CARRIED BROUGHT FOUND LOST SOLD BOUGHT MENDED PAINTED OPENED CLOSED FILLED
        EMPTIED HID WATCHED FOLLOWED CALLED HELPED PUSHED PULLED LIFTED DROPPED CLEANED WASHED
        COUNTED STOLE GAVE TOOK SHOWED BURIED CAUGHT CHASED FED""".split(),
    "verb_i": """WAITED SLEPT LAUGHED WEPT SANG DANCED WANDERED RESTED WORKED SHOUTED WHISPERED
        PRAYED LISTENED TREMBLED SMILED HURRIED STUMBLED ARRIVED RETURNED VANISHED""".split(),
    "adv": """SLOWLY QUICKLY QUIETLY LOUDLY CAREFULLY GENTLY SUDDENLY TOGETHER ALONE AGAIN
        EARLY LATE TWICE OFTEN SOFTLY PATIENTLY HAPPILY SADLY""".split(),
    "prep": "TO FROM NEAR BEHIND BESIDE INTO ACROSS THROUGH AROUND OVER UNDER BEYOND TOWARDS".split(),
    "time": """IN THE MORNING|AT NIGHT|BEFORE DAWN|AFTER SUPPER|ON SUNDAY|ON MONDAY|IN THE WINTER|
        IN THE SPRING|AT NOON|BY EVENING|LAST WEEK|YESTERDAY|ONE DAY|LONG AGO""".split("|"),
    "conj": "AND BUT WHILE BECAUSE WHEN BEFORE AFTER UNTIL".split(),
    "name": """JOHN MARY THOMAS MARGARET WILLIAM ANNE ROBERT ELIZABETH HENRY SARAH GEORGE ALICE
        EDWARD MARTHA PETER HELEN RICHARD JANE ARTHUR EMMA""".split(),
}

# Other languages: same patterns, smaller lexicons (lower case, as CommonVoice sentences are).
_OTHER = {
    "de": {
        "det": "der die das ein eine jeder".split(),
        "num": "zwei drei vier fünf sechs sieben acht zehn viele".split(),
        "adj": "alte junge kleine große dunkle helle stille kalte warme grüne rote blaue braune "
        "müde fröhliche kluge sanfte schwere leere volle".split(),
        "noun": "Bauer Bäcker Seemann Müller Jäger Schäfer Händler König Königin Kind Arzt Lehrer "
        "Pferd Hund Katze Fuchs Wolf Bär Rabe Schaf".split(),
        "thing": "Korb Brief Hammer Kessel Wagen Boot Seil Kerze Flasche Eimer Messer Buch Karte "
        "Löffel Teller Apfel Stein Blume Stuhl Tisch".split(),
        "things": "Körbe Briefe Kessel Wagen Boote Kerzen Flaschen Eimer Bücher Äpfel Steine "
        "Blumen Stühle".split(),
        "place": "Markt Mühle Hafen Brücke Kirche Burg Wald Wiese Fluss Garten Küche Stall Dorf "
        "Stadt Turm".split(),
        "verb_t": "trug brachte fand verlor verkaufte kaufte malte öffnete schloss füllte sah "
        "rief hob zählte".split(),
        "verb_i": "wartete schlief lachte weinte sang tanzte ruhte arbeitete rief flüsterte".split(),
        "adv": "langsam schnell leise laut vorsichtig sanft plötzlich zusammen allein wieder".split(),
        "prep": "zum vom neben hinter über unter durch".split(),
        "time": "am Morgen|in der Nacht|am Abend|am Sonntag|im Winter|im Frühling|gestern".split("|"),
        "conj": "und aber während weil als bevor".split(),
        "name": "Hans Anna Peter Maria Karl Greta Fritz Lena Otto Klara".split(),
    },
    "nl": {
        "det": "de het een elke deze die".split(),
        "num": "twee drie vier vijf zes zeven acht tien veel".split(),
        "adj": "oude jonge kleine grote donkere lichte stille koude warme groene rode blauwe "
        "bruine moe vrolijke slimme zachte zware lege volle".split(),
        "noun": "boer bakker zeeman molenaar jager herder koopman koning koningin kind dokter "
        "leraar paard hond kat vos wolf beer raaf schaap".split(),
        "thing": "mand brief hamer ketel wagen boot touw kaars fles emmer mes boek kaart lepel "
        "bord appel steen bloem stoel tafel".split(),
        "things": "manden brieven ketels wagens boten kaarsen flessen emmers boeken appels "
        "stenen bloemen stoelen".split(),
        "place": "markt molen haven brug kerk kasteel bos weide rivier tuin keuken stal dorp "
        "stad toren".split(),
        "verb_t": "droeg bracht vond verloor verkocht kocht schilderde opende sloot vulde zag "
        "riep tilde telde".split(),
        "verb_i": "wachtte sliep lachte huilde zong danste rustte werkte riep fluisterde".split(),
        "adv": "langzaam snel zacht luid voorzichtig plotseling samen alleen weer".split(),
        "prep": "naar van naast achter over onder door".split(),
        "time": "in de ochtend|in de nacht|in de avond|op zondag|in de winter|in de lente|gisteren".split("|"),
        "conj": "en maar terwijl omdat toen voordat".split(),
        "name": "Jan Anna Piet Maria Kees Greet Joost Lotte Willem Sanne".split(),
    },
    "es": {
        "det": "el la un una cada este esta".split(),
        "num": "dos tres cuatro cinco seis siete ocho diez muchos".split(),
        "adj": "viejo joven pequeño grande oscuro claro tranquilo frío caliente verde rojo azul "
        "marrón cansado alegre listo suave pesado vacío lleno".split(),
        "noun": "granjero panadero marinero molinero cazador pastor mercader rey reina niño "
        "médico maestro caballo perro gato zorro lobo oso cuervo oveja".split(),
        "thing": "cesto carta martillo caldero carro barco cuerda vela botella cubo cuchillo "
        "libro mapa cuchara plato manzana piedra flor silla mesa".split(),
        "things": "cestos cartas calderos carros barcos velas botellas cubos libros manzanas "
        "piedras flores sillas".split(),
        "place": "mercado molino puerto puente iglesia castillo bosque prado río jardín cocina "
        "establo pueblo ciudad torre".split(),
        "verb_t": "llevó trajo encontró perdió vendió compró pintó abrió cerró llenó vio llamó "
        "levantó contó".split(),
        "verb_i": "esperó durmió rió lloró cantó bailó descansó trabajó gritó susurró".split(),
        "adv": "despacio rápido suavemente fuerte con cuidado de repente juntos solo otra vez".split(),
        "prep": "hacia desde junto a detrás de sobre bajo por".split(),
        "time": "por la mañana|por la noche|por la tarde|el domingo|en invierno|en primavera|ayer".split("|"),
        "conj": "y pero mientras porque cuando antes de que".split(),
        "name": "Juan Ana Pedro María Carlos Lucía Pablo Elena Diego Carmen".split(),
    },
    "it": {
        "det": "il la un una ogni questo questa".split(),
        "num": "due tre quattro cinque sei sette otto dieci molti".split(),
        "adj": "vecchio giovane piccolo grande scuro chiaro tranquillo freddo caldo verde rosso "
        "azzurro bruno stanco allegro furbo dolce pesante vuoto pieno".split(),
        "noun": "contadino fornaio marinaio mugnaio cacciatore pastore mercante re regina "
        "bambino medico maestro cavallo cane gatto volpe lupo orso corvo pecora".split(),
        "thing": "cesto lettera martello pentola carro barca corda candela bottiglia secchio "
        "coltello libro mappa cucchiaio piatto mela pietra fiore sedia tavolo".split(),
        "things": "cesti lettere pentole carri barche candele bottiglie secchi libri mele pietre "
        "fiori sedie".split(),
        "place": "mercato mulino porto ponte chiesa castello bosco prato fiume giardino cucina "
        "stalla villaggio città torre".split(),
        "verb_t": "portò trovò perse vendette comprò dipinse aprì chiuse riempì vide chiamò "
        "sollevò contò".split(),
        "verb_i": "aspettò dormì rise pianse cantò ballò riposò lavorò gridò sussurrò".split(),
        "adv": "lentamente presto piano forte con cura improvvisamente insieme da solo ancora".split(),
        "prep": "verso da accanto a dietro sopra sotto attraverso".split(),
        "time": "di mattina|di notte|di sera|la domenica|in inverno|in primavera|ieri".split("|"),
        "conj": "e ma mentre perché quando prima che".split(),
        "name": "Giovanni Anna Pietro Maria Carlo Lucia Paolo Elena Marco Giulia".split(),
    },
    "fr": {
        "det": "le la un une chaque ce cette".split(),
        "num": "deux trois quatre cinq six sept huit dix plusieurs".split(),
        "adj": "vieux jeune petit grand sombre clair calme froid chaud vert rouge bleu brun "
        "fatigué joyeux malin doux lourd vide plein".split(),
        "noun": "fermier boulanger marin meunier chasseur berger marchand roi reine enfant "
        "médecin maître cheval chien chat renard loup ours corbeau mouton".split(),
        "thing": "panier lettre marteau chaudron chariot bateau corde bougie bouteille seau "
        "couteau livre carte cuillère assiette pomme pierre fleur chaise table".split(),
        "things": "paniers lettres chaudrons chariots bateaux bougies bouteilles seaux livres "
        "pommes pierres fleurs chaises".split(),
        "place": "marché moulin port pont église château forêt prairie rivière jardin cuisine "
        "étable village ville tour".split(),
        "verb_t": "porta apporta trouva perdit vendit acheta peignit ouvrit ferma remplit vit "
        "appela souleva compta".split(),
        "verb_i": "attendit dormit rit pleura chanta dansa reposa travailla cria chuchota".split(),
        "adv": "lentement vite doucement fort prudemment soudain ensemble seul encore".split(),
        "prep": "vers depuis près de derrière sur sous à travers".split(),
        "time": "le matin|la nuit|le soir|le dimanche|en hiver|au printemps|hier".split("|"),
        "conj": "et mais pendant que parce que quand avant que".split(),
        "name": "Jean Anne Pierre Marie Charles Lucie Paul Hélène Louis Claire".split(),
    },
}


class SentenceGrammar:
    """A small random phrase-structure grammar over one language's lexicon.

    Arguments
    ---------
    lexicon : dict
        Word lists keyed by word class (``det``, ``adj``, ``noun``, ``thing``, ...).
    upper : bool
        Whether to upper-case sentences (LibriSpeech transcripts are upper case).
    """

    def __init__(self, lexicon, upper=False):
        self.lexicon = lexicon
        self.upper = upper

    @staticmethod
    def languages():
        """The language codes that have a lexicon."""
        return ["en"] + list(_OTHER)

    @classmethod
    def for_language(cls, lang):
        """The grammar of ``lang`` (ISO 639-1 code); English is upper case like LibriSpeech."""
        if lang == "en":
            return cls(_EN, upper=True)
        if lang not in _OTHER:
            raise ValueError(f"No lexicon for language {lang!r}; known: {cls.languages()}")
        return cls(_OTHER[lang])

    def vocabulary(self):
        """Every word the grammar can produce."""
        words = set()
        for entries in self.lexicon.values():
            for entry in entries:
                words.update(entry.split())
        return {w.upper() if self.upper else w for w in words}

    def _pick(self, rng, cls):
        return rng.choice(self.lexicon[cls])

    def _noun_phrase(self, rng, agent=True):
        roll = rng.random()
        if agent and roll < 0.15:
            return self._pick(rng, "name")
        if not agent and roll < 0.3:
            return " ".join([self._pick(rng, "num"), self._pick(rng, "adj"), self._pick(rng, "things")])
        words = [self._pick(rng, "det")]
        if rng.random() < 0.6:
            words.append(self._pick(rng, "adj"))
        words.append(self._pick(rng, "noun" if agent else "thing"))
        return " ".join(words)

    def _place_phrase(self, rng):
        det = self.lexicon["det"][0]
        return " ".join([self._pick(rng, "prep"), det, self._pick(rng, "place")])

    def _clause(self, rng):
        words = [self._noun_phrase(rng, agent=True)]
        if rng.random() < 0.6:
            words += [self._pick(rng, "verb_t"), self._noun_phrase(rng, agent=False)]
        else:
            words.append(self._pick(rng, "verb_i"))
            if rng.random() < 0.5:
                words.append(self._pick(rng, "adv"))
        if rng.random() < 0.5:
            words.append(self._place_phrase(rng))
        return words

    def sentence(self, rng):
        """Draw one sentence with ``rng`` (a ``random.Random``): 4 to 20 words, no punctuation."""
        words = []
        if rng.random() < 0.25:
            words.append(self._pick(rng, "time"))
        words += self._clause(rng)
        if rng.random() < 0.3:
            words += [self._pick(rng, "conj")] + self._clause(rng)
        text = " ".join(" ".join(words).split()[:20])
        return text.upper() if self.upper else text

    def sentences(self, count, rng, exclude=()):
        """``count`` distinct sentences, none of them in ``exclude``."""
        seen, out = set(exclude), []
        for _ in range(count * 200):
            if len(out) == count:
                break
            text = self.sentence(rng)
            if text not in seen:
                seen.add(text)
                out.append(text)
        if len(out) < count:
            raise RuntimeError(f"The grammar gave only {len(out)} distinct sentences of {count}")
        return out
