"""Name pools for synthetic patients and staff (diverse, with accents to exercise PN handling)."""

FAMILY_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Dubois", "Lefèvre", "Moreau", "Rossi", "Bianchi",
    "Kowalski", "Nowak", "Novák", "Svensson", "Johansson", "Nielsen", "Jansen", "de Vries", "Peeters", "Silva",
    "Santos", "Pereira", "Oliveira", "Kim", "Park", "Chen", "Wang", "Li", "Zhang", "Tanaka",
    "Suzuki", "Sato", "Patel", "Shah", "Singh", "Kumar", "Okafor", "Mensah", "Haddad", "Cohen",
    "Ivanov", "Popescu", "Horváth", "Papadopoulos", "Yılmaz", "O'Brien", "Murphy", "Kelly", "Byrne", "Núñez",
)

MALE_GIVEN_NAMES = (
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas", "Charles",
    "Daniel", "Matthew", "Anthony", "Mark", "Paul", "Steven", "Andrew", "Kenneth", "Joshua", "Kevin",
    "José", "Luis", "Carlos", "Jürgen", "Hans", "François", "Pierre", "Marco", "Luca", "Piotr",
    "Lars", "Erik", "Jan", "João", "Min-jun", "Wei", "Hiroshi", "Arjun", "Raj", "Chinedu",
    "Kwame", "Omar", "Ahmed", "David", "Dmitri", "Andrei", "László", "Nikos", "Mehmet", "Seán",
)

FEMALE_GIVEN_NAMES = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Emily", "Donna", "Michelle", "Carol",
    "María", "Ana", "Lucía", "Jutta", "Anna", "Sophie", "Amélie", "Chloé", "Giulia", "Francesca",
    "Agnieszka", "Ingrid", "Astrid", "Maja", "Inês", "Ji-woo", "Mei", "Yuki", "Priya", "Ananya",
    "Ngozi", "Ama", "Fatima", "Leila", "Olga", "Elena", "Zsófia", "Eleni", "Ayşe", "Siobhán",
)

PHYSICIAN_NAMES = (
    "House^Gregory^^Dr.", "Grey^Meredith^^Dr.", "Shepherd^Derek^^Dr.", "Bailey^Miranda^^Dr.",
    "Carter^John^^Dr.", "Ross^Doug^^Dr.", "Lewis^Susan^^Dr.", "Weaver^Kerry^^Dr.",
    "Kovač^Luka^^Dr.", "Chen^Jing-Mei^^Dr.", "Benton^Peter^^Dr.", "Corday^Elizabeth^^Dr.",
)

INSTITUTIONS = (
    ("Imagebank General Hospital", "IBGH"),
    ("Riverside Medical Center", "RMC"),
    ("St. Lucia Clinic", "SLC"),
)
